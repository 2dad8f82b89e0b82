-- Who caused each event: the principal of its command (the event's ce_principal header).
ALTER TABLE event_log ADD COLUMN principal text;
