package bench

// RunSteadyForTest exposes runSteady to the package's external tests.
var RunSteadyForTest = runSteady
