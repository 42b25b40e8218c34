print(JSON.stringify(std.getenviron()));
