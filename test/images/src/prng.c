/* Build-time helper (not put in any image): writes N bytes of deterministic
 * pseudo-random data (xorshift64* seeded by SEED) to stdout, so the multilayer
 * test image has incompressible layers that are identical on every rebuild.
 * usage: prng SEED N */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
	uint64_t x, buf[512];
	long long n;
	size_t i;

	if (argc != 3)
		return 2;
	x = strtoull(argv[1], NULL, 0) * 0x9E3779B97F4A7C15ull + 1;
	for (n = atoll(argv[2]); n > 0; n -= sizeof buf) {
		for (i = 0; i < 512; i++) {
			x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
			buf[i] = x * 0x2545F4914F6CDD1Dull;
		}
		fwrite(buf, 1, n < (long long)sizeof buf ? (size_t)n : sizeof buf, stdout);
	}
	return 0;
}
