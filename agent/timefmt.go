package agent

import (
	"math"
	"time"
)

// ms is a duration in milliseconds with microsecond precision, for logs.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
