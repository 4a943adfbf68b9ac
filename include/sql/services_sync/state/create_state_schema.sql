-- Create the state schema, owned by the connecting role. Run only when the schema is missing:
-- CREATE SCHEMA needs the CREATE privilege on the database, even with IF NOT EXISTS, and a DBA
-- may prefer to create it once (CREATE SCHEMA services_sync AUTHORIZATION <role>).
CREATE SCHEMA IF NOT EXISTS {schema};
