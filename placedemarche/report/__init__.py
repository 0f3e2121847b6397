"""Reports: results files, PNG plots and the report.html pages of every command."""
