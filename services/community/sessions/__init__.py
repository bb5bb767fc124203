"""Help from people's time: helpers' free slots matched to requests for a session.

The rules (``domain``) and the exact matcher (``scheduling``), pure Python on numpy and
OR-Tools; the use cases (``service``): helpers registered and verified, requests for
help, a coordinator's scheduling runs and the sessions they make; the API (``api``).
"""
