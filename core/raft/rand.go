package raft

// prng is a splitmix64 generator. The core draws every random number it
// needs (only election timeouts) from it, so a run is reproducible from
// Config.Seed. It is not safe for concurrent use and not cryptographic.
type prng struct{ state uint64 }

// newPRNG seeds a generator from the configured seed and the node ID, so
// nodes that share a seed still draw different timeouts.
func newPRNG(seed int64, id uint64) *prng {
	p := &prng{state: uint64(seed) ^ (id * 0x9e3779b97f4a7c15)}
	p.next() // discard the first output, which is close to the seed
	return p
}

func (p *prng) next() uint64 {
	p.state += 0x9e3779b97f4a7c15
	z := p.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a value in [0, n). n must be positive. The modulo bias is
// negligible for the small n used for timeouts.
func (p *prng) intn(n int) int {
	if n <= 0 {
		return 0
	}
	return int(p.next() % uint64(n))
}
