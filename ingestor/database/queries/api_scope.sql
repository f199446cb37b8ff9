-- The part of the plant a request is about, from business codes: which of the codes are unknown, and the
-- equipment and shifts they select.  Every analytics query of the REST API takes its result.
--
-- Parameters:
--   $1  text[]  site codes          ┐
--   $2  text[]  area codes          │ NULL: no filter on that level.  The levels combine with AND, the codes
--   $3  text[]  work center codes   │ of one level with OR: site=A&equipment=X,Y is X and Y, if they are in A.
--   $4  text[]  equipment codes     ┘
--   $5  text[]  shift codes: every site's shift of that code; NULL: every shift.
-- Output, one row:
--   unknown_sites, unknown_areas, unknown_work_centers, unknown_equipment, unknown_shifts
--       text[]: the given codes that no dimension row has (empty when all are known), in the order given
--   equipment_ids  integer[]: the equipment selected, by id (NULL when no level is filtered: every equipment)
--   shift_ids      integer[]: the shifts selected, by id (NULL when no shift code is given)
-- Codes are compared exactly (case matters), like the upserts of the dimension sync.
SELECT ARRAY(SELECT c FROM unnest($1::text[]) WITH ORDINALITY u (c, i)
             WHERE NOT EXISTS (SELECT 1 FROM dim_site s WHERE s.site_code = u.c) ORDER BY u.i)
           AS unknown_sites,
       ARRAY(SELECT c FROM unnest($2::text[]) WITH ORDINALITY u (c, i)
             WHERE NOT EXISTS (SELECT 1 FROM dim_area a WHERE a.area_code = u.c) ORDER BY u.i)
           AS unknown_areas,
       ARRAY(SELECT c FROM unnest($3::text[]) WITH ORDINALITY u (c, i)
             WHERE NOT EXISTS (SELECT 1 FROM dim_work_center w WHERE w.work_center_code = u.c) ORDER BY u.i)
           AS unknown_work_centers,
       ARRAY(SELECT c FROM unnest($4::text[]) WITH ORDINALITY u (c, i)
             WHERE NOT EXISTS (SELECT 1 FROM dim_equipment e WHERE e.equipment_code = u.c) ORDER BY u.i)
           AS unknown_equipment,
       ARRAY(SELECT c FROM unnest($5::text[]) WITH ORDINALITY u (c, i)
             WHERE NOT EXISTS (SELECT 1 FROM dim_shift sh WHERE sh.shift_code = u.c) ORDER BY u.i)
           AS unknown_shifts,
       CASE WHEN num_nonnulls($1::text[], $2::text[], $3::text[], $4::text[]) > 0 THEN
           ARRAY(SELECT e.equipment_id
                 FROM dim_equipment e
                 JOIN dim_work_center w ON w.work_center_id = e.work_center_id
                 JOIN dim_area a ON a.area_id = w.area_id
                 JOIN dim_site s ON s.site_id = a.site_id
                 WHERE ($1::text[] IS NULL OR s.site_code = ANY ($1::text[]))
                   AND ($2::text[] IS NULL OR a.area_code = ANY ($2::text[]))
                   AND ($3::text[] IS NULL OR w.work_center_code = ANY ($3::text[]))
                   AND ($4::text[] IS NULL OR e.equipment_code = ANY ($4::text[]))
                 ORDER BY e.equipment_id)
       END AS equipment_ids,
       CASE WHEN $5::text[] IS NOT NULL THEN
           ARRAY(SELECT sh.shift_id FROM dim_shift sh WHERE sh.shift_code = ANY ($5::text[]) ORDER BY sh.shift_id)
       END AS shift_ids;
