"""Reporting from records only: tables and the fair-comparison guard (``tables``), the leaderboard in
each format (``leaderboard``), the html page (``page``), plots, publishing and ``diagnose``."""
