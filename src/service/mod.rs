//! The HTTP back-end service: API, roles, audit log, persistent jobs, case workflow, PACS client.
