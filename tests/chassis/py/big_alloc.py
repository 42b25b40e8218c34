# 500 MB: more than the default 256 MiB memory limit.
buf = bytearray(500 * 1024 * 1024)
print(len(buf))
