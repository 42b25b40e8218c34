// Everything QuickJS might use to reach the host: none of it may work.
const out = {exec: typeof os.exec, spawn: typeof os.spawn, fetch: typeof fetch,
             popen: typeof std.popen, urlGet: typeof std.urlGet, Worker: typeof os.Worker};
print(JSON.stringify(out));
