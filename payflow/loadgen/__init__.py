"""``payflow-loadgen``: open-loop traffic for the PayFlow API.

Arrivals follow a Poisson process at a set rate, whatever the server does: when the server
slows down, requests pile up instead of the offered load dropping (a closed-loop generator,
whose users wait for each answer, would hide exactly the latency an incident causes).
"""
