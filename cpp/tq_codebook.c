// Lloyd-Max codebooks for one coordinate of a uniform unit vector in R^d, in C.
//
// The law: (1 + x) / 2 ~ Beta(a, a), a = (d - 1) / 2. A cell's mass is a difference of
// regularized incomplete beta functions (continued fraction, Lentz's method); its first
// moment has a closed form. tqgguf/codebook.py is the definition (scipy); tests require
// the float32 results of both to be identical. `tqgguf prepare` writes these values, and
// ggml computes the same ones when no model has set its codebooks (e.g. an RPC server).
#include "tq.h"

#include <math.h>

// Continued fraction of the incomplete beta function (Numerical Recipes' betacf, modified Lentz).
static double tq_betacf(double a, double b, double x) {
    const double tiny = 1e-300;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double h = d;
    for (int m = 1; m <= 10000; ++m) {
        const int m2 = 2 * m;
        double aa = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2));
        d = 1.0 + aa * d; if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c; if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        h *= d * c;
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2));
        d = 1.0 + aa * d; if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c; if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        const double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16) break;
    }
    return h;
}

// I_x(a, a): the regularized incomplete beta function with equal parameters.
static double tq_betainc_sym(double a, double x) {
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    const double lbeta = 2.0 * lgamma(a) - lgamma(2.0 * a);
    const double front = exp(a * log(x) + a * log1p(-x) - lbeta) / a;
    if (x < 0.5) {
        return front * tq_betacf(a, a, x);
    }
    return 1.0 - exp(a * log1p(-x) + a * log(x) - lbeta) / a * tq_betacf(a, a, 1.0 - x);
}

// P(X <= t) and the integral of x f(x) from -1 to t, for one coordinate in R^d.
static double tq_cdf(int d, double t) {
    return tq_betainc_sym(0.5 * (d - 1), 0.5 * (1.0 + t));
}

static double tq_first_moment(int d, double t) {
    const double k1 = 0.5 * (d - 1);
    if (t <= -1.0 || t >= 1.0) return 0.0;
    const double lbeta = lgamma(0.5) + lgamma(k1) - lgamma(0.5 + k1);
    return -exp(k1 * log1p(-t * t) - lbeta) / (2.0 * k1);
}

int tq_lloyd_max(int d, int bits, double * c) {
    if (d < 3 || d > 4096 || bits < 1 || bits > 8) {
        return -1;
    }
    const int n = 1 << bits;
    // start from N(0, 1/d) quantiles of the cell midpoints (close to the answer)
    for (int i = 0; i < n; ++i) {
        const double p = (i + 0.5) / n;
        // inverse normal CDF by bisection on erfc: plenty fast for n <= 256
        double lo = -10.0, hi = 10.0;
        for (int it = 0; it < 200; ++it) {
            const double mid = 0.5 * (lo + hi);
            if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid; else hi = mid;
        }
        c[i] = 0.5 * (lo + hi) / sqrt((double) d);
    }
    double edges_cdf[257], edges_mom[257], nc[256];
    for (int iter = 0; iter < 20000; ++iter) {
        edges_cdf[0] = 0.0; edges_mom[0] = 0.0;
        edges_cdf[n] = 1.0; edges_mom[n] = 0.0;
        for (int i = 1; i < n; ++i) {
            const double t = 0.5 * (c[i - 1] + c[i]);
            edges_cdf[i] = tq_cdf(d, t);
            edges_mom[i] = tq_first_moment(d, t);
        }
        double change = 0.0;
        for (int i = 0; i < n; ++i) {
            nc[i] = (edges_mom[i + 1] - edges_mom[i]) / (edges_cdf[i + 1] - edges_cdf[i]);
        }
        for (int i = 0; i < n; ++i) {
            const double v = 0.5 * (nc[i] - nc[n - 1 - i]); // the law is symmetric: keep it exactly
            change = fmax(change, fabs(v - c[i]));
            c[i] = v;
        }
        if (change < 1e-15) break;
    }
    return 0;
}

int tq_codebook_scaled(int d, int bits, float * out) {
    double c[256];
    if (tq_lloyd_max(d, bits, c) != 0) {
        return -1;
    }
    for (int i = 0; i < (1 << bits); ++i) {
        out[i] = (float) (c[i] * sqrt((double) d));
    }
    return 0;
}
