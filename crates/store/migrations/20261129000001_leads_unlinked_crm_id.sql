-- A contact deleted in unlink mode leaves its lead without a crm_id. HubSpot
-- sends a GDPR delete's contact.privacyDeletion as a separate event, without
-- the address and without any ordering guarantee against contact.deletion, so
-- the erasure must still find the lead by the contact it was unlinked from.
ALTER TABLE leads ADD COLUMN unlinked_crm_id bigint;

CREATE INDEX leads_integration_unlinked_crm_id_idx
    ON leads (integration_id, unlinked_crm_id)
    WHERE unlinked_crm_id IS NOT NULL;
