"""Drawing: matplotlib figures (plots) and predictions drawn on their images (render). Imports nothing of the
package, so the tasks and the artifacts both draw with it."""
