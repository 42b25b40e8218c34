// Tries to read the file named by scriptArgs[1]; prints what it got.
const f = std.open(scriptArgs[1], "r");
print(f === null ? "denied" : "read:" + f.readAsString());
