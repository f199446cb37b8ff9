// An independent OPC UA server (node-opcua) for the tests: node-opcua answers some requests differently from
// asyncua, which our simulator is built on.  Usage:
//   node opcua_server.js PORT PKI_DIR [secure]
// "secure" offers only Basic256Sha256/SignAndEncrypt and trusts no client certificate it has not been given
// (PKI_DIR/trusted/certs), so a client with a new certificate is refused as a real plant server refuses it.
// Prints "LISTENING <endpoint url>" once it accepts connections; stops on SIGTERM.
"use strict";
const { OPCUAServer } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { SecurityPolicy } = require("node-opcua-secure-channel");
const { MessageSecurityMode } = require("node-opcua-service-secure-channel");

async function main() {
    const [port, pki, option] = process.argv.slice(2);
    const secure = option === "secure";
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: pki, automaticallyAcceptUnknownCertificate: false,
    });
    const server = new OPCUAServer({
        port: Number(port), host: "127.0.0.1", hostname: "127.0.0.1",
        serverCertificateManager,
        securityModes: secure ? [MessageSecurityMode.SignAndEncrypt] : [MessageSecurityMode.None],
        securityPolicies: secure ? [SecurityPolicy.Basic256Sha256] : [SecurityPolicy.None],
        allowAnonymous: true,
    });
    await server.initialize();
    await server.start();
    process.stdout.write(`LISTENING ${server.getEndpointUrl()}\n`);
    process.on("SIGTERM", () => server.shutdown(0).then(() => process.exit(0)));
}

main().catch((error) => { process.stderr.write(`${error.stack || error}\n`); process.exit(1); });
