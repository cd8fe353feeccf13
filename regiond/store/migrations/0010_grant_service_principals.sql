-- Grants to AWS service principals (CreateGrant GranteeServicePrincipal / RetiringServicePrincipal).
--
-- A grant names its grantee either as an IAM principal ARN (grantee_principal) or as an AWS
-- service principal such as "logs.us-east-1.amazonaws.com" (grantee_service_principal), never
-- both; its retiring principal likewise, or none. A service-principal grant permits no caller of
-- regionkms (regiond.domain.decision.GrantView): it is kept, listed, retired and revoked as AWS
-- does. The SourceArn grant constraint needs no column: it is a member of the constraints jsonb.

ALTER TABLE grants
    ALTER COLUMN grantee_principal DROP NOT NULL,
    ADD COLUMN grantee_service_principal text,
    ADD COLUMN retiring_service_principal text,
    ADD CONSTRAINT grants_one_grantee CHECK ((grantee_principal IS NULL) <> (grantee_service_principal IS NULL)),
    ADD CONSTRAINT grants_one_retiring CHECK (retiring_principal IS NULL OR retiring_service_principal IS NULL);
