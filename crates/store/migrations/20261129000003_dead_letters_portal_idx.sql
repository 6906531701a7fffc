-- The REST API lists an integration's dead letters by the portal of their
-- event (an inbound letter belongs to the integration of its event's
-- portal, whatever integration recorded it): without this index that is a
-- scan of every tenant's letters.
CREATE INDEX dead_letters_portal_idx ON dead_letters (portal_id, id) WHERE portal_id IS NOT NULL;
