-- How far the pipeline has delivered: the end of the newest data interval whose run finished
-- with every batch acknowledged (either capture mode; an hour without changes counts), and
-- whether the CDC tables exist (then cdc_delivered_up_to.sql adds CDC runs triggered by hand).
-- NULL: nothing delivered yet. Params (bind): cdc_windows (the qualified table name).
SELECT (SELECT max(interval_end) FROM {schema}.delivery_runs WHERE finished_at IS NOT NULL)
           AS delivered_up_to,
       to_regclass(%(cdc_windows)s) IS NOT NULL AS has_cdc;
