"""Table, markdown, JSON, JUnit, HTML; plain JSON export of cases."""
