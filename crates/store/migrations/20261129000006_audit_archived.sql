-- `archived`: a lead deleted on the platform had its contact archived in
-- HubSpot (the integration's `platform_deletion = archive`).
ALTER TABLE audit_log
    DROP CONSTRAINT audit_log_action_check,
    ADD CONSTRAINT audit_log_action_check CHECK (action IN (
        'created', 'updated', 'linked', 'unlinked', 'erased', 'merged', 'restored',
        'archived', 'skipped', 'conflict', 'dead_lettered'));
