"""Reports of result rows."""
