package transport

import (
	"hash/crc32"
	"math/rand/v2"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

func crc32Update(c uint32, b []byte) uint32 { return crc32.Update(c, castagnoli, b) }

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

func newTestRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }
