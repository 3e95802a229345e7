"""lossbench: which classification loss should I use, and does the difference hold up?"""
