// Reads a JSON object from stdin, answers with n + 1 and its own arguments.
const data = JSON.parse(std.in.readAsString());
print(JSON.stringify({n: data.n + 1, argv: scriptArgs.slice(1)}));
