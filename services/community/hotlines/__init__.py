"""Hotlines: an organisation's telephone lines, the calls their operators log, an
emergency call made a household delivery or a case in one step, a counselling call a
request for help, and the daily figures per hotline and per organisation."""
