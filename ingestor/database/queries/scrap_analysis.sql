-- Scrap per equipment and product over the 7 days before a reference time, against the quantity produced.
--
-- Parameters:
--   $1  timestamptz  as_of: scrap of production records starting in [as_of - 7 days, as_of) counts.
-- The product of a scrap record is its own product_id, else its production record's; records without any
-- product are grouped under product NULL.  A scrap record without a cost is valued at
-- scrap_qty × the product's standard_cost where that is known.
-- Output, highest scrap rate first (unknown last), then equipment and product code:
--   equipment_code, product_code, product_name, scrap_incidents, total_scrap_qty, total_produced,
--   scrap_rate_pct (numeric, 2 decimals), total_scrap_cost (numeric, 2 decimals), scrap_codes (sorted, ', ')
WITH scrap_analysis AS (
    SELECT fp.equipment_id,
           COALESCE(s.product_id, fp.product_id) AS product_id,
           count(*)                              AS scrap_incidents,
           sum(s.scrap_qty)                      AS total_scrap_qty,
           sum(COALESCE(s.scrap_cost, s.scrap_qty * p.standard_cost)) AS total_scrap_cost,
           string_agg(DISTINCT s.scrap_code, ', ' ORDER BY s.scrap_code) AS scrap_codes
    FROM fact_scrap s
    JOIN fact_production fp ON fp.production_id = s.production_id
    LEFT JOIN dim_product p ON p.product_id = COALESCE(s.product_id, fp.product_id)
    WHERE fp.start_time >= $1::timestamptz - INTERVAL '7 days'
      AND fp.start_time < $1::timestamptz
    GROUP BY fp.equipment_id, COALESCE(s.product_id, fp.product_id)
),
production_volume AS (
    SELECT fp.equipment_id,
           fp.product_id,
           sum(fp.total_parts_produced) AS total_produced
    FROM fact_production fp
    WHERE fp.start_time >= $1::timestamptz - INTERVAL '7 days'
      AND fp.start_time < $1::timestamptz
    GROUP BY fp.equipment_id, fp.product_id
)
SELECT e.equipment_code,
       p.product_code,
       p.product_name,
       sa.scrap_incidents,
       sa.total_scrap_qty,
       pv.total_produced,
       round(100.0 * sa.total_scrap_qty / NULLIF(pv.total_produced, 0), 2) AS scrap_rate_pct,
       round(sa.total_scrap_cost, 2)                                      AS total_scrap_cost,
       sa.scrap_codes
FROM scrap_analysis sa
JOIN dim_equipment e ON e.equipment_id = sa.equipment_id
LEFT JOIN dim_product p ON p.product_id = sa.product_id
LEFT JOIN production_volume pv ON pv.equipment_id = sa.equipment_id
                              AND pv.product_id IS NOT DISTINCT FROM sa.product_id
ORDER BY scrap_rate_pct DESC NULLS LAST, e.equipment_code, p.product_code NULLS LAST;
