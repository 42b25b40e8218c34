import time

time.sleep(0.05)  # a short sleep wakes up
print("napped", flush=True)
time.sleep(3600)  # an hour: only the wall clock ends it
print("woke after an hour")
