-- The W3C trace context of each event's command (the event's traceparent header).
ALTER TABLE event_log ADD COLUMN traceparent text;
