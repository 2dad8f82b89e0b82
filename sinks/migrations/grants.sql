-- Applied after the migrations on every run (idempotent), by the migration role that owns
-- the tables. Two group roles per schema:
--   {reader}: SELECT on this schema's tables only, for query users;
--   {writer}: what the sink needs (SELECT, INSERT, UPDATE), and nothing more: it owns no
--             table and may not create any, so it cannot DROP, TRUNCATE or ALTER.
-- Grant them to login roles, e.g. `GRANT {reader} TO alice;`. Where the roles are declared
-- up front (CloudNativePG's spec.managed.roles) they are used as they are; otherwise they
-- are created here, which needs a migration role with CREATEROLE.
DO $$
DECLARE
    wanted text;
BEGIN
    FOREACH wanted IN ARRAY ARRAY[{reader_name}, {writer_name}] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = wanted);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', wanted);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist, and % may not create roles', wanted,
                    current_user
                    USING HINT = 'declare it (CloudNativePG: spec.managed.roles), or run the '
                        'migrations as a role with CREATEROLE';
        END;
    END LOOP;
END $$;
GRANT USAGE ON SCHEMA {schema} TO {reader}, {writer};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}, {writer};
GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {writer};
REVOKE INSERT, UPDATE ON {schema}.cqrs_migrations FROM {writer};
