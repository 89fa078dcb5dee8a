VACUUM main INTO :file;
