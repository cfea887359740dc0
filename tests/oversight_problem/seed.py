"""Square roots by Newton's method: the oversight test problem's seed (one iteration from the guess x)."""

# EVOLVE-BLOCK-START
ITERATIONS = 1


def solve(xs):
    out = []
    for x in xs:
        guess = x
        for _ in range(ITERATIONS):
            guess = 0.5 * (guess + x / guess)
        out.append(guess)
    return out
# EVOLVE-BLOCK-END
