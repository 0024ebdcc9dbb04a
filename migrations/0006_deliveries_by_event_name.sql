-- The delivery log searched by event name (the dashboard's Deliveries filter and
-- GET /api/v1/deliveries?eventname=), newest first like every other search of it.
CREATE INDEX deliveries_eventname_started ON deliveries (eventname, started_at DESC);
