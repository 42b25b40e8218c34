// 500 MB: more than the default 256 MiB memory limit.
const buf = new ArrayBuffer(500 * 1024 * 1024);
print(buf.byteLength);
