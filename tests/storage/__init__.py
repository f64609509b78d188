"""Storage backends: statestore (SQLite, PostgreSQL), migrations, model repository (folder, S3)."""
