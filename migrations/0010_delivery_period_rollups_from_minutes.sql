-- Fills the period rollups (0009) from the per-minute rollups a hub already has, so its long
-- windows keep their history after the upgrade. Run once, on empty period tables; the widths
-- are the recorder's (services/api/src/recorder/periods.rs).
INSERT INTO delivery_period_rollups (width_s, at, service, rule_key, delivered,
    failed_retryable, failed_permanent, timeout, circuit_open, latency_sum_ms, latency_max_ms)
SELECT w.width_s, to_timestamp(floor(extract(epoch FROM r.minute) / w.width_s) * w.width_s),
    r.service, r.rule_key, sum(r.delivered), sum(r.failed_retryable), sum(r.failed_permanent),
    sum(r.timeout), sum(r.circuit_open), sum(r.latency_sum_ms), max(r.latency_max_ms)
FROM delivery_rollups r, (VALUES (900), (86400)) AS w(width_s)
GROUP BY 1, 2, 3, 4;

INSERT INTO delivery_period_latency (width_s, at, service, rule_key, bucket, samples)
SELECT w.width_s, to_timestamp(floor(extract(epoch FROM r.minute) / w.width_s) * w.width_s),
    r.service, r.rule_key, (u.i - 1)::smallint, sum(u.c)
FROM delivery_rollups r, unnest(r.latency_buckets) WITH ORDINALITY AS u(c, i),
    (VALUES (900), (86400)) AS w(width_s)
WHERE u.c > 0
GROUP BY 1, 2, 3, 4, 5;
