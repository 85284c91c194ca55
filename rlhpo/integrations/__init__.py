"""Optional integrations with training frameworks."""
