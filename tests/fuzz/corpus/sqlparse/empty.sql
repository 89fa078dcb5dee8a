  -- nothing here
 /* at all */ ;
