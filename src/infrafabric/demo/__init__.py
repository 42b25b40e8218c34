"""``ifctl demo``: watch agents in separate processes take pushed work through the bus."""
