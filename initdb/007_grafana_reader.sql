-- 007: grafana_reader, a role that may only read what the dashboards show. Grafana logs in as
-- a role that inherits it (initdb/grafana-login.sh creates that one, with its password), never
-- as the owner of the tables. Additive only: a role and grants.
-- Roles belong to the whole server: creating one needs CREATEROLE, which a managed database's
-- application user may lack. Then this only skips, and the grants wait for an administrator
-- to create the role and apply this file again.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_reader')
       AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        CREATE ROLE grafana_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- another database on this server created it at the same moment
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT USAGE ON SCHEMA public TO grafana_reader;
        GRANT SELECT ON conversations, feedback TO grafana_reader;
    END IF;
END $$;

INSERT INTO schema_migrations (version) VALUES ('007') ON CONFLICT (version) DO NOTHING;
