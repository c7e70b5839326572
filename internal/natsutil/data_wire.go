package natsutil

// DataBucket is the Object Store bucket of the job's packed dataset: its shards
// under their manifest names and the manifest under DataManifestObject
// (`samdiffsr data push`).
func (n Names) DataBucket() string { return "samdiffsr-data-" + n.Job }

// DataManifestObject is the object name of the pushed manifest in DataBucket.
const DataManifestObject = "manifest.json"
