package duro

import "time"

// Time is a wall-clock time as methods see it.
type Time = time.Time
