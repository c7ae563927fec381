-- Orthanc keeps its index in its own database beside pacslabel's.
CREATE DATABASE orthanc OWNER pacslabel;
