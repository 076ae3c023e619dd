-- The emotion correction (analysis/emotion/recalibration.py) each call was scored under, as JSON:
-- its profile, temperature and biases, so a later recalibration can undo it on the stored scores.
ALTER TABLE calls ADD COLUMN calibration VARCHAR;
