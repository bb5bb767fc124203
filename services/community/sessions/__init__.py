"""Help from people's time: helpers' free slots matched to requests for a session.

This slice holds the scheduler only: the rules (``domain``) and the exact matcher
(``scheduling``), pure Python on numpy and OR-Tools; ``service`` turns a helper's
stored week and booked sessions into its input.
"""
