"""Database access: pool construction, migrations."""
