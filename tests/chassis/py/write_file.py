# Tries to create the file named by argv[1].
import sys

try:
    with open(sys.argv[1], "w") as f:
        f.write("pwned")
    print("wrote")
except OSError as exc:
    print(f"denied: {type(exc).__name__}")
