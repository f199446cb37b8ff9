// An Eclipse Tahu edge node (the npm package sparkplug-client, not ours) for tests/test_sparkplug.py.
// Usage: node sparkplug_edge.js PORT GROUP NODE.  One device DEV-1 with a Double metric "temperature"
// (alias 7, engUnit degC) and an Int32 metric "count" (alias 8).  Commands on stdin, one per line:
//   data TEMPERATURE COUNT   publish DDATA by alias
// Prints "birth" after each birth (the first and every rebirth the host asks for) and "published" after data.
"use strict";
const sparkplug = require("sparkplug-client");
const readline = require("readline");

const [port, groupId, edgeNode] = process.argv.slice(2);
const client = sparkplug.newClient({
  serverUrl: `tcp://127.0.0.1:${port}`, username: "", password: "", groupId, edgeNode,
  clientId: `tahu-${groupId}-${edgeNode}`, version: "spBv1.0", keepalive: 5,
});
let temperature = 20.5;
let count = 0;

function birth() {
  const now = Date.now();
  client.publishNodeBirth({
    timestamp: now,
    metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: false }],
  });
  client.publishDeviceBirth("DEV-1", {
    timestamp: now,
    metrics: [
      { name: "temperature", alias: 7, type: "Double", value: temperature,
        properties: { engUnit: { type: "String", value: "degC" } } },
      { name: "count", alias: 8, type: "Int32", value: count },
    ],
  });
  console.log("birth");
}

client.on("birth", birth);
client.on("ncmd", (payload) => {
  for (const metric of payload.metrics || []) {
    if (metric.name === "Node Control/Rebirth" && metric.value) {
      birth();
    }
  }
});
client.on("error", (error) => console.log(`error ${error}`));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, ...args] = line.trim().split(/\s+/);
  if (command === "data") {
    temperature = Number(args[0]);
    count = Number(args[1]);
    client.publishDeviceData("DEV-1", {
      timestamp: Date.now(),
      metrics: [{ alias: 7, type: "Double", value: temperature }, { alias: 8, type: "Int32", value: count }],
    });
    console.log("published");
  }
});
