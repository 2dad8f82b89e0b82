-- Applied after the migrations on every start (idempotent). Two group roles per schema:
--   {reader}: SELECT only, for query users;
--   {writer}: what the sink needs (SELECT, INSERT, UPDATE), and nothing more: it owns no
--             table and may not create any, so it cannot DROP, TRUNCATE or ALTER.
-- Grant them to login roles, e.g. `GRANT {reader} TO alice;`.
DO $$ BEGIN
    CREATE ROLE {reader} NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$ BEGIN
    CREATE ROLE {writer} NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA {schema} TO {reader}, {writer};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}, {writer};
GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {writer};
REVOKE INSERT, UPDATE ON {schema}.cqrs_migrations FROM {writer};
