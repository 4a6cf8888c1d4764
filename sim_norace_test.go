//go:build !race

package zeroloss

// simDefaultSeeds is how many seeds TestSimulation runs by default.
const simDefaultSeeds = 500
