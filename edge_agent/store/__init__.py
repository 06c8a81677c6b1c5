"""The only code that speaks SQL to the site database: connection, migrations, one repository
per table group."""
