os.sleep(50); // a short sleep wakes up
console.log("napped");
os.setTimeout(() => console.log("woke after an hour"), 3600 * 1000); // only the wall clock ends it
