//go:build race

package zeroloss

// simDefaultSeeds: under the race detector (about 8 times slower) the
// simulation runs fewer seeds by default.
const simDefaultSeeds = 100
