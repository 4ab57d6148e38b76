//go:build race

package main

// raceEnabled is true when the tests run with -race: the ratelimitd binary
// is then built with -race too, which reuses the packages the test build
// compiled and checks the server for races in the process tests.
const raceEnabled = true
